"""mammo-viewer training: data sources, training loops, metrics, export (may import engine)."""
