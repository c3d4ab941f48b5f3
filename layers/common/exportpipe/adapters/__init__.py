"""The only modules that call AWS (boto3): the job store, the event bus, secrets, the results bucket,
the workflow, and the copier that streams downloads into S3."""
