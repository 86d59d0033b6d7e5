"""Device communication: register codec, device profiles (more to come: engines, CAN, dry contacts)."""
