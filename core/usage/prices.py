"""MODEL_PRICES_FILE: USD per million tokens per model, to show a cost beside the tokens.

    gpt-4o-mini: {prompt: 0.15, completion: 0.60}
    gpt-4o: {prompt: 2.50, completion: 10.00}

JSON or YAML (JSON is YAML). A model not in the table has no cost shown, never a made-up one.
"""

from __future__ import annotations

from pathlib import Path

import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from core.errors import ConfigError
from core.usage.meter import TokenCount

__all__ = ["ModelPrice", "PriceTable", "load_prices"]


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: float = Field(ge=0, description="USD per million prompt (input) tokens")
    completion: float = Field(ge=0, description="USD per million completion (output) tokens")

    def cost(self, tokens: TokenCount) -> float:
        return (tokens.prompt * self.prompt + tokens.completion * self.completion) / 1_000_000


class PriceTable(RootModel[dict[str, ModelPrice]]):
    def cost(self, models: dict[str, TokenCount]) -> float | None:
        """The USD cost of tokens by model; None when any model with tokens has no price."""
        total = 0.0
        for model, tokens in models.items():
            price = self.root.get(model)
            if price is None:
                if tokens.total:
                    return None
                continue
            total += price.cost(tokens)
        return total


def load_prices(path: Path) -> PriceTable:
    """Raises: ConfigError: the file is missing, not JSON/YAML, or not a table of prices (one line naming it)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PriceTable.model_validate(data or {})
    except OSError as exc:
        raise ConfigError(f"MODEL_PRICES_FILE {path}: cannot read it: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"MODEL_PRICES_FILE {path}: not JSON or YAML: {exc}".splitlines()[0]) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(f"MODEL_PRICES_FILE {path}: {where}: {first['msg']}") from exc
