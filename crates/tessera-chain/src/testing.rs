//! Test support (feature `testing`): PSBTs to sign, and an independent check of finalized
//! Bitcoin transactions.

use crate::bitcoin::{unsigned_psbt, SpentOutput};

/// An unsigned PSBT (base64) spending `inputs` (script, sat; the `n`-th from output 0 of a made-up
/// transaction whose txid is `n + 1` repeated) into `outputs` (script, sat), with the outputs it
/// spends.
pub fn psbt_spending(
    inputs: &[(Vec<u8>, u64)],
    outputs: &[(Vec<u8>, u64)],
) -> (String, Vec<SpentOutput>) {
    let spent: Vec<SpentOutput> = inputs
        .iter()
        .zip(1u8..)
        .map(|((script, value), n)| SpentOutput {
            txid: [n; 32],
            vout: 0,
            value: *value,
            script_pubkey: script.clone(),
        })
        .collect();
    let psbt = unsigned_psbt(&spent, outputs).expect("a PSBT of valid scripts and amounts");
    (psbt, spent)
}

/// Checks with Bitcoin Core's script interpreter (libbitcoinconsensus, Taproot rules on) that
/// the network transaction `raw` spends each of `spent`, in input order; the error names the
/// first input that does not.
pub fn consensus_verifies(raw: &[u8], spent: &[SpentOutput]) -> Result<(), String> {
    let utxos: Vec<bitcoinconsensus::Utxo> = spent
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value as i64,
        })
        .collect();
    for (index, out) in spent.iter().enumerate() {
        bitcoinconsensus::verify(&out.script_pubkey, out.value, raw, Some(&utxos), index)
            .map_err(|e| format!("input {index} does not spend its output: {e:?}"))?;
    }
    Ok(())
}
