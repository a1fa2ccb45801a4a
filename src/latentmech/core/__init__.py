"""Ground floor shared by every study: storage, training, layers, metrics, plots. Knows no study."""
