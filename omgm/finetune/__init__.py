"""Fine-tuning the step-3 generator: the SFT set (data), its tokens (tokens), the trainer (train)."""
