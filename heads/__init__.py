"""Reward heads, the multi-module model, the Bradley–Terry loss, and their checkpoint folder."""

from heads.model import CheckpointError, MultiModuleRewardModel, RewardHead, bradley_terry_loss

__all__ = ["CheckpointError", "MultiModuleRewardModel", "RewardHead", "bradley_terry_loss"]
