"""activator: an HTTP/2-native activator and load balancer for serverless workloads."""

__version__ = "0.1.0"
