"""The GCS's outbound gRPC clients: the raylets' and the core workers' (Ray's
RayletClientPool and CoreWorkerClientPool), over one channel pool."""
