"""Training on the IR with torch (the optional torch extra): graph modules and recovery fine-tuning."""
