"""Platforms' APIs as catalog sources: one module per arena behind :class:`.base.Arena`, found through
:mod:`.registry`."""
