"""The one data layer: read and validate preference tables, index users and groups, split, batch.

    data = plural.data.read_table("prefs.parquet")      # validated PreferenceData
    seen, unseen = plural.data.split_users(data, 0.3)    # whole users held out
    parts = plural.data.split_table(plural.data.read_frame("prefs.jsonl"), plural.data.SplitConfig())  # plural split
"""

from plural.data.arrays import PreferenceData, split_pairs, split_users
from plural.data.batching import device_data, sample_pairs, sample_users
from plural.data.split import SplitConfig, split_table
from plural.data.table import read_frame, read_table

__all__ = ["PreferenceData", "read_table", "read_frame", "split_users", "split_pairs", "SplitConfig", "split_table",
           "device_data", "sample_pairs", "sample_users"]
