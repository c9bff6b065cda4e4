"""Training data: real photographs warped by homographies, and MegaDepth."""
