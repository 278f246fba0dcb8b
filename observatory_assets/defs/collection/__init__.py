"""Collection: sources and query designs as code, and the polite poller that watches them."""
