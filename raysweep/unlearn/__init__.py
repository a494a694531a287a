"""Unlearning objectives (pure loss functions) and the forget-target noise inputs."""
