"""Human spot-checks in Argilla: ``tapir review push`` sends a stratified sample of a curated
round, ``tapir review pull`` brings the answers back, and the next ``tapir data`` applies them
(``tapir.review.corrections``). Only ``records``, ``argilla_client`` and ``spot_check`` import the
Argilla SDK, and only when a review command runs."""
