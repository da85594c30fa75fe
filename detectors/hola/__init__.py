"""HOLA (seed paper 003): AVF-MAE++ encoders with iterative cross-modal interaction, local-global
fusion, a pyramid-like refiner and, as an explicit transductive option, pseudo-label self-training.

Importing this package does not import torch; the modules are:
- backbone.py: the AVF-MAE++ base video and audio encoders (local-global blocks);
- checkpoint.py: an AVF-MAE++ checkpoint loaded strictly by path;
- model.py: the detector network (projection, ICMI, LGCF, refiner, head) and its ablation switches;
- pretrain.py, cli.py: stage 1, masked audio-visual autoencoding (`avbench hola pretrain`);
- preprocess.py: one clip's frames and filterbank (or MFCC);
- training.py, detector.py: fine-tuning and PSSI on the core trainer, the registered detectors.
"""
