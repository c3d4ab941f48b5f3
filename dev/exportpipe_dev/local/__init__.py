"""The local stack (development only; never shipped to Lambda)."""

from exportpipe_dev.local.stack import FunctionFailedError, LocalStack

__all__ = ["FunctionFailedError", "LocalStack"]
