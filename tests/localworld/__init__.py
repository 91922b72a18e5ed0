"""The local test world: the services this collection talks to, on loopback.

- ``localworld.moto``: moto in server mode (EC2, SSM, S3, IAM, STS).
- ``localworld.registry``: Debian's docker-registry, with stand-in images.
- ``localworld.hub_mirror``: the part of the Hugging Face Hub API that
  huggingface_hub's ``snapshot_download`` uses, serving generated models.

Every service binds 127.0.0.1 only.
"""
