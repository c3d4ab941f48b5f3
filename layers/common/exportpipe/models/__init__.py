"""What the services pass around: definitions (the base a source refines), jobs and windows, the
results layout and manifest, and the workflow's task inputs and outputs."""
