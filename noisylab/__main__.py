from noisylab.interrupts import exit_when_interrupted

if __name__ == "__main__":
    with exit_when_interrupted():  # Ctrl-C while the heavy modules load: one sentence, exit 130
        from noisylab.train import main

        main()
