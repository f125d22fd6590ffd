if true {
    keep;
