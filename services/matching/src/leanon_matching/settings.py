"""Matching's settings (LEANON_ environment variables)."""

from __future__ import annotations

from pydantic import Field

from leanon_matching.domain.model import Weights
from leanon_matching.service import MatchingConfig
from leanon_shared.settings import LeanOnSettings


class MatchingSettings(LeanOnSettings):
    matching_port: int = 8001
    offer_ttl_s: float = Field(default=120, gt=0)
    coverage_threshold: float = Field(default=1.0, gt=0, le=1)
    distance_scale_km: float = Field(default=10, gt=0)
    weight_skill: float = Field(default=0.3, ge=0)
    weight_availability: float = Field(default=0.2, ge=0)
    weight_distance: float = Field(default=0.25, ge=0)
    weight_language: float = Field(default=0.1, ge=0)
    weight_fairness: float = Field(default=0.15, ge=0)
    recent_scale: float = Field(default=5.0, gt=0)
    critical_fanout: int = Field(default=3, ge=1, le=20)
    joint_assignment: bool = True
    timer_interval_s: float = Field(default=0.25, gt=0)

    def matching_config(self) -> MatchingConfig:
        return MatchingConfig(
            offer_ttl_s=self.offer_ttl_s,
            coverage_threshold=self.coverage_threshold,
            distance_scale_km=self.distance_scale_km,
            recent_scale=self.recent_scale,
            critical_fanout=self.critical_fanout,
            joint_assignment=self.joint_assignment,
            weights=Weights(
                skill=self.weight_skill,
                availability=self.weight_availability,
                distance=self.weight_distance,
                language=self.weight_language,
                fairness=self.weight_fairness,
            ),
        )
