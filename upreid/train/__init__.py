"""Training loops: pre-training, supervised fine-tuning, SpCL."""
