"""PURE job lifecycle: a snapshot of jobs, pods and nodes in, the actions that converge them out.

The controller (kopf) keeps the snapshot current from watches and carries out the actions; nothing here
talks to Kubernetes, so every rule of placement, retry and failover is unit-tested without a cluster.
"""
