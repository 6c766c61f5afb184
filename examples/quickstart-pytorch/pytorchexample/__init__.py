"""pytorchexample: Flower's Message API with fedsecure's secure aggregation."""
