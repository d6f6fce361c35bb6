"""Plain PyTorch/transformers training code; runs under torchrun without Prefect."""
