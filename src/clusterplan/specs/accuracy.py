"""Cross-validated accuracy of the estimators, as `clusterplan calibrate` stores it
(``catalog/crossval.yaml``) and `clusterplan validate` shows it.

Percentages are None where a table or family has no modelled rows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from clusterplan.specs._base import Spec


class TableErrors(Spec):
    """Mean absolute % error of one table: on the fitted rows, and out of sample."""

    rows: int = Field(ge=0, description="modelled rows")
    mape_pct: float | None = Field(description="in sample: the shipped fit, which saw these rows")
    mape_out_of_sample_pct: float | None = Field(description="refitted with this table left out")
    mape_family_out_pct: float | None = Field(description="refitted with each row's chip family left out")


class StageRecord(Spec):
    """Where one calibration stage of a family came from."""

    stage: str
    parameters: list[str]
    rows: int = Field(ge=0)
    tables: list[str]
    families: list[str] = Field(description="the families whose rows were fitted")


class FamilyErrors(Spec):
    own_parameters: int = Field(ge=0, description="parameters fitted on this family's own rows")
    own_rows: int = Field(ge=0)
    mape_pct: float | None
    mape_family_out_pct: float | None = Field(description="refitted with the whole family left out")
    stages: list[StageRecord]


class RowErrors(Spec):
    table: str
    label: str
    family: str
    stage: Literal["dense", "MoE", "serving"] = Field(description="calibration stage of the row")
    chips: int | None = Field(ge=1, description="chips of the published run (None: a serving row)")
    higher_is_faster: bool = Field(description="the row's metric is a rate (True) or a time (False)")
    error_pct: float | None
    error_out_of_sample_pct: float | None
    error_family_out_pct: float | None
    precision: str | None = Field(default=None, description="the run's matmul precision (training rows)")
    mfu_published: float | None = Field(
        default=None, ge=0, description="the published run's MFU: its speed with the model's FLOPs per "
        "token, over the dense peak at its precision (training rows)")


class MeanErrors(Spec):
    """Mean absolute % error over several tables or rows, in sample and out of sample."""

    over: Literal["tables", "rows"] = Field(
        description="tables: each table's MAPE counts once; rows: each published run counts once")
    stage: Literal["all", "dense", "MoE", "serving"]
    count: int = Field(ge=0, description="tables or rows averaged (those with an in-sample error)")
    mape_pct: float | None
    mape_out_of_sample_pct: float | None
    mape_family_out_pct: float | None


class CrossValSummary(Spec):
    """Cross-validated errors per table, per family and per row (signed row errors are what
    error bands are drawn from)."""

    tables: dict[str, TableErrors]
    families: dict[str, FamilyErrors]
    rows: list[RowErrors]
