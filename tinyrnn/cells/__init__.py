"""Cell math shared by every backend (see ``tinyrnn.cells.math``)."""
