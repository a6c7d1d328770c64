"""Dataset plugins: one dataset family per file, found by folder.

Each module registers loaders with `@register_dataset(name)` (from `bench.data`);
a loader takes no argument and returns a `RawData` with the full train and test
splits. The registry imports every module here (names not starting with `_`) on
its first lookup. Offline sources and how to get them: docs/DATA.md.
"""
