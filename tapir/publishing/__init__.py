"""Publishing a curated dataset: its card (``card``, written by every ``tapir data``) and the
upload to the Hugging Face Hub (``hub_push``, ``tapir push``)."""
