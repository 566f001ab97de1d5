"""An organization's AWS account, as the service reaches it: its Data Exports in its own S3 bucket.

``client`` holds the boto3 clients (S3, STS), always built with the org's own credentials (an
access key pair, or a role assumed with the org's external id) and run on a bounded thread pool of
their own; boto errors are translated here into ``errors.SourceError``. ``source`` is where an
export lives (bucket, prefix, export name, region) and its key layout; ``manifest`` reads a CUR 2.0
delivery's ``Manifest.json``. Nothing here knows about warehouses or pipelines.
"""
