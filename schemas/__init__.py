"""Contracts shared by every stage, each defined once: manifest Arrow schema, config and response models."""
