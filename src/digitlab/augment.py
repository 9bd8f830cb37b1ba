"""Online augmentation of whole uint8 batches with torch-native affine_grid/grid_sample."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AugmentConfig(BaseModel):
    """The ``[augment]`` section of a recipe; every field at its default means no augmentation."""

    model_config = ConfigDict(extra="forbid")

    rotation: float = Field(0.0, ge=0, le=180, description="max rotation, degrees (uniform ±)")
    scale: tuple[float, float] = Field((1.0, 1.0), description="min and max zoom factor")
    translate: float = Field(0.0, ge=0, le=0.5, description="max shift, fraction of 28 px (±)")
    shear: float = Field(0.0, ge=0, le=60, description="max shear, degrees (uniform ±)")
    crop: tuple[int, int] | None = Field(
        None, description="random square crop side range in px, resized back to 28 (MXNet)"
    )
    elastic_alpha: float = Field(0.0, ge=0, description="Simard elastic strength in px; 0 = off")
    elastic_sigma: float = Field(4.0, gt=0, description="Simard elastic smoothness in px")
    p: float = Field(1.0, ge=0, le=1, description="probability that a sample is augmented")

    @property
    def enabled(self) -> bool:
        return self.p > 0 and (
            self.rotation > 0
            or self.scale != (1.0, 1.0)
            or self.translate > 0
            or self.shear > 0
            or self.crop is not None
            or self.elastic_alpha > 0
        )
