"""The DA3 network in plain PyTorch: config, backbone (dinov2), heads (dpt), camera, net, loading."""
