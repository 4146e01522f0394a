"""The data contract: what a user brings (hcps, catalog, interactions), checked and normalised.

Load a directory with :func:`load_dataset`; every rule violation is reported as a
:class:`ContractError` naming file, row (1-based, header not counted) and column.
"""

from nextbest.contract.dataset import (
    Dataset,
    load_catalog,
    load_dataset,
    load_hcps,
    load_hcps_and_catalog,
    load_interactions,
    load_send_list,
    load_territories,
    write_dataset,
)
from nextbest.contract.errors import MAX_PROBLEMS_PER_FILE, ContractError, Problem
from nextbest.contract.files import read_table, write_table
from nextbest.contract.schema import (
    CONTENT_TYPES,
    REQUIRED_CATALOG_COLUMNS,
    REQUIRED_HCP_COLUMNS,
    REQUIRED_INTERACTION_COLUMNS,
    allowed_specialties,
    consent_column,
    is_rep_channel,
)
from nextbest.contract.validate import (
    validate_catalog,
    validate_hcps,
    validate_interactions,
    validate_send_list,
)

__all__ = [
    "CONTENT_TYPES",
    "MAX_PROBLEMS_PER_FILE",
    "REQUIRED_CATALOG_COLUMNS",
    "REQUIRED_HCP_COLUMNS",
    "REQUIRED_INTERACTION_COLUMNS",
    "ContractError",
    "Dataset",
    "Problem",
    "allowed_specialties",
    "consent_column",
    "is_rep_channel",
    "load_catalog",
    "load_dataset",
    "load_hcps",
    "load_hcps_and_catalog",
    "load_interactions",
    "load_send_list",
    "load_territories",
    "read_table",
    "validate_catalog",
    "validate_hcps",
    "validate_interactions",
    "validate_send_list",
    "write_dataset",
    "write_table",
]
