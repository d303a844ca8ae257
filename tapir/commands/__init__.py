"""The ``tapir`` verbs, one module each (as TRL's CLI commands are): each registers its parser and
runs. This is the only room that may use every stage: a verb is where stages meet (``distill``
runs data, then training; ``ablate`` runs all three per arm)."""
