"""The Open Inference Protocol (KServe V2): REST routes and a gRPC service, same pipeline."""
