from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Base for exchanged data: immutable-by-convention, strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class IdsQuery(Model):
    """A query about several things at once (waiters of one process share one query)."""

    ids: list[str]
