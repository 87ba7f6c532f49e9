"""Clinical features: uploaded clinical tables (files), their column definitions and values."""
