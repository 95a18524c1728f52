"""The one data layer: read and validate preference tables, index users and groups, split, batch.

    data = plural.data.read_table("prefs.parquet")      # validated PreferenceData
    seen, unseen = plural.data.split_users(data, 0.3)    # whole users held out
"""

from plural.data.arrays import PreferenceData, split_pairs, split_users
from plural.data.batching import device_data, sample_pairs, sample_users
from plural.data.table import read_table

__all__ = ["PreferenceData", "read_table", "split_users", "split_pairs", "device_data", "sample_pairs", "sample_users"]
