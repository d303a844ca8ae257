"""Staged curriculum SFT with TRL (issue: "Staged curriculum training with TRL")."""
