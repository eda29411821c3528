"""Inside the network: feature visualisation, dataset examples, DeepDream and what fine-tuning changed."""
