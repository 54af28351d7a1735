"""Everything between a video file and the model's tensors: decoding, transforms, the chat template,
the processor, datasets, QVED tools and the synthetic exercise clips."""
