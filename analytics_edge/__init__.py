"""Edge analytics: camera sources, detector plug-ins (onnxruntime), tracking, rules, privacy
masking, and compact detection events sent through the relays instead of video."""
