"""AlpacaEval 2.0 and MT-Bench on every checkpoint (issue: "Evaluation")."""
