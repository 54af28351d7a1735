"""Training: the stages of ARCHITECTURE §7 on the transformers Trainer, with LoRA, resume and caching."""
