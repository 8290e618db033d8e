"""``rtpick serve``'s building blocks. `rtpick.serve.protocol` is the Open Inference Protocol v2 codec (JSON and
binary tensors, gRPC conversion); it imports numpy only, tritonclient's gRPC messages when those are asked for.
"""
