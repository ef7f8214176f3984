"""The I/O shell: kopf watches and indexes, the reconcile loop, Kubernetes writes, events and metrics.

The only package that imports kopf or a Kubernetes client.
"""
