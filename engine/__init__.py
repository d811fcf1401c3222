"""segengine: streaming customer segmentation (Kafka -> Redis state -> tier rules -> segment changes)."""
