from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

EVENT_KINDS = ("failure", "maintenance", "inspection")

MachineId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


class Reading(BaseModel):
    """One reading from one machine: event time, per-machine sequence number, sensor values.

    The ingest endpoint validates this shape strictly (see ``pitstop.ingest.validate``); this model
    documents it in the OpenAPI spec and builds readings in tools and tests.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    machine_id: MachineId
    ts: datetime = Field(description="event time, ISO 8601 with a timezone")
    seq: Annotated[StrictInt, Field(ge=0, description="per-machine sequence number, increasing")]
    values: dict[str, StrictFloat | StrictInt] = Field(description="sensor name → finite number")
