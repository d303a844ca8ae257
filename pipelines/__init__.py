"""The TAPIR data pipeline: a distilabel step graph from seed instructions to curriculum rounds."""
