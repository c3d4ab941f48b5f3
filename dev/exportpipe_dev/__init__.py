"""exportpipe's development tools: the local stack, the source sandboxes, the ``exportpipe`` command
and the demo. Never shipped: the Lambda layer and the runtime wheel hold only ``exportpipe``."""
