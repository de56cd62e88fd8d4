use super::*;

#[test]
fn part_rejects_out_of_bounds_and_partial_blocks() {
    let b = Bytes::Owned(vec![0u8; 34].into());
    assert!(QuantPart::new(DType::Q8_0, 1, 32, &b, 0).is_some());
    assert!(QuantPart::new(DType::Q8_0, 2, 32, &b, 0).is_none());
    assert!(QuantPart::new(DType::Q8_0, 1, 16, &b, 0).is_none());
    assert!(QuantPart::new(DType::F32, 1, 32, &b, 0).is_none());
}
