"""Reports built from run files: diagnostic rules, training reports, day checkpoints."""
