"""Weight converters: user weight files (safetensors) -> our Orbax checkpoints."""
