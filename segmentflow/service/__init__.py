"""Service layer: the Processor (batches through the engine and a store) and file replay."""
